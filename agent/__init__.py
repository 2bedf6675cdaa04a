"""bulletproof-agent: renders and applies the hardened mail stack on a Debian 12 host."""
AGENT_VERSION = "0.1.0"
