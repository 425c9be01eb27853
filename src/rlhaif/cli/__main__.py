from rlhaif.cli import main

main()
