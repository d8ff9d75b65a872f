"""Load-test a Triton-served model with the ``locust`` command.

    locust -f loadtest/locustfile.py --headless -u 16 -r 8 -t 1m --host 127.0.0.1:8001
    locust -f loadtest/locustfile.py --headless -u 64 -r 16 -t 5m --host 127.0.0.1:8001 --processes 4
    locust -f loadtest/locustfile.py --master ...   /   locust -f loadtest/locustfile.py --worker --master-host=...
    locust -f loadtest/locustfile.py --headless -u 16 -r 8 -t 1m --host http://127.0.0.1:8080   # the gateway, HTTP

The model, payload and objectives come from ``--slo`` (default: ``slo.yaml`` next
to this file); the load shape from Locust's own flags. At the end the master
prints the verdict, writes the report (``--report-dir``) and exits 0 (held),
1 (violated) or 2 (nothing measured). ``tritonstack loadtest`` runs the same
users with the SLO's own load and adds ``--find-capacity``; see docs/loadtest.md.

To write your own tasks, subclass ``TritonStackUser`` and call
``self.timed(name, self.client.embed, texts)`` from a ``@task``.
"""

from pathlib import Path

from tritonstack.loadtest.locust_cli import install
from tritonstack.loadtest.users import TextModelUser, TritonStackUser  # noqa: F401  (Locust picks up the User)

install(default_slo=Path(__file__).with_name("slo.yaml"))
