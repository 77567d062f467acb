"""Evaluate generated dialogues: metrics, confidence intervals, a judge model and the report.

Pipeline: `inputs.load_dialogues` -> (optional) `judge.Judge.judge_dialogues` ->
`evaluate.evaluate` -> `report.write_report`.
"""
