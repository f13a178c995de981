"""The provider's SQL store (``twilio_sms_*`` tables): one API for workers, sensors, triggers and webhooks.

Import ``airflow_provider_twilio_sms.store.api`` for the store; nothing here creates an engine on import.
"""
