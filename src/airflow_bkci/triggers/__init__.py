"""Triggers for deferrable waits, run by Airflow's triggerer."""
