"""ZeroMQ: frames in (`source.py`), results out and the control socket (`output.py`), the wire format
(`wire.py`), CURVE keys and endpoint checks (`security.py`) and the robot-side sender (`client.py`)."""
