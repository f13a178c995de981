"""Human-in-the-loop by SMS: reply codes, number -> Airflow user mappings, reply parsing, and answering
Airflow's HITL requests through Airflow's own API.
"""
