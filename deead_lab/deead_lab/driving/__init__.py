"""Driving in the closed loop: the tracker that turns a plan into steering and throttle, the written rules for an
episode (step cap, completion, score, at-fault, spawn check), and the drive loop in the simulator."""
