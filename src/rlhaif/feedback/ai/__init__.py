"""AI feedback: a constitution of principles, critique-and-revision (Constitutional AI's supervised stage)
and a multiple-choice judge whose normalized (A)/(B) probabilities become soft preference labels (RLAIF)."""
