"""deead_calibrate's parts: the risk-control procedure (Learn then Test over exchangeable units, the split test)
and the replay of recorded heads under any delta; the CLI is deead_lab.calibrate."""
