"""The live endpoints are for logged-in users only."""

from __future__ import annotations

import pytest

from agentdash.live.consumers import CLOSE_LOGIN_REQUIRED

pytestmark = pytest.mark.e2e

# Opens a socket from the page (same origin, with whatever cookies the browser holds)
# and tells how it went: the close code, or the start of the first message.
OPEN_SOCKET = """
url => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onmessage = (event) => { resolve({message: event.data.slice(0, 300)}); socket.close(); };
  socket.onclose = (event) => resolve({closed: event.code});
})
"""


@pytest.mark.parametrize("path", ["/ws/approvals/", "/ws/sessions/", "/ws/sessions/1/"])
def test_a_logged_out_websocket_is_refused(open_page, server, path):
    page = open_page(None, "/login/")

    assert page.evaluate(OPEN_SOCKET, server.ws_url(path)) == {"closed": CLOSE_LOGIN_REQUIRED}


def test_the_same_websocket_logged_in_gets_the_snapshot(open_page, server, operator):
    page = open_page(operator, "/sessions/")

    outcome = page.evaluate(OPEN_SOCKET, server.ws_url("/ws/approvals/"))

    assert 'id="queue-list"' in outcome["message"]
