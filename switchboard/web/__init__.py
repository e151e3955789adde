"""The web dashboard: live calls (Server-Sent Events), past calls, the vendor report, and its JSON API.

    hub = LiveHub()                                   # web/live.py: fed by the server's call hooks
    auth = Auth(os.environ.get("SWITCHBOARD_API_TOKEN"))  # web/auth.py
    routes = Dashboard(hub, auth, store).routes()     # web/dashboard.py; HTML in web/pages.py
"""

from switchboard.web.auth import Auth
from switchboard.web.dashboard import Dashboard
from switchboard.web.live import LiveHub

__all__ = ["Auth", "Dashboard", "LiveHub"]
