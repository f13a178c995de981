"""QA of a signup flow: the app under test texts a one-time code to our Twilio number; we capture it.

``request_code`` asks the app under test (``params.signup_url``) to start a signup for our number;
the app sends the OTP by SMS; Twilio posts it to the webhook; ``wait_for_code`` (deferred, so no
worker slot is held while waiting) finds it in the store; ``use_code`` reads the six digits back from
the store with ``read_reply`` (the sensor's XCom names the message, it never holds the code).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor

with DAG(
    dag_id="twilio_sms_otp_capture",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "example", "qa"],
    params={
        "signup_url": Param("http://127.0.0.1:8098/signup", type="string", description="the app under test"),
        "our_number": Param(
            "+15005550006", type="string", description="our Twilio number receiving the code"
        ),
    },
) as dag:

    @task
    def request_code(params=None) -> None:
        import requests

        response = requests.post(params["signup_url"], json={"phone": params["our_number"]}, timeout=30)
        response.raise_for_status()

    wait_for_code = SmsReplySensor(
        task_id="wait_for_code",
        to_number="{{ params.our_number }}",
        body_pattern=r"code is (\d{6})",
        deferrable=True,
        poll_interval=1,
        timeout=300,
    )

    @task
    def use_code(found: dict) -> str:
        from airflow_provider_twilio_sms.replies import read_reply

        code = read_reply(found).groups[0]  # masked in this task's log from here on
        # a real pipeline would now submit the code to the app under test
        return f"captured a {len(code)}-digit code from message {found['message_sid']}"

    request_code() >> wait_for_code
    use_code(wait_for_code.output)
