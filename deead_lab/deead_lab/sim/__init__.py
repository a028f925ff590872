"""The MetaDrive simulator as the lab uses it: scenario set-up, the traffic model (yielding IDM), the lane-change
commander, the route labels and one episode. Imported in the MetaDrive venv (numpy 1.23): numpy, MetaDrive, the
data set's format and the runtime's base layer only."""
