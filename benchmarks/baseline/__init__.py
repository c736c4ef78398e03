"""The bare C relay that bounds what the SFU's fan-out can cost (see run.py)."""
