"""The replica: the only code that imports the user's predictor."""
