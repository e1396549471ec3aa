"""The live layer: every state change reaches every open page within milliseconds.

- publisher.py: `changed()` (called in the transaction that changes a session, a call
  or the conversation) and `publish_text()` (a reply as the model writes it) render
  HTML fragments once per audience after commit and send them through the channel
  layer: in-memory on the embedded default, Redis when REDIS_URL is set.
- fragments.py: those fragments, and the snapshots sent when a socket connects; the
  element ids they target are the contract with the pages (listed there).
- consumers.py and routing.py: the authenticated, origin-checked websockets.
- groups.py: the channel-layer group names.
"""

from agentdash.live.publisher import changed, publish_text

__all__ = ["changed", "publish_text"]
