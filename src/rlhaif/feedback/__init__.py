"""Feedback: the human annotation app (``feedback.human``), AI labels (``feedback.ai``), aggregation of votes
into pairs, ratings and agreement (``feedback.aggregate``) and a simulated annotator panel (``feedback.simulate``)."""
