"""The migration loop on live traffic: retrain behind a regression gate, the shadow report, drift offline."""
