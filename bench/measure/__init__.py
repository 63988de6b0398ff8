"""Measurement around a run: resources and step times (`monitor`), where a step's time goes (`profile`) and what
serving the trained model costs (`deploy`). It never imports the report: its figures reach the report through
MLflow only."""
