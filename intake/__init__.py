"""soudan-intake: no resident who writes to the consultation mailbox is missed.

Pipeline stages, one module each: fetch (IMAP) -> parse -> automatic (RFC 3834)
-> triage -> route -> compose -> send (outbox), with store keeping everything.
"""

__version__ = "0.1.0"
