"""Janus 1.1 (videoroom plugin) under the same load harness as the SFU."""
