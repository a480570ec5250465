"""The papers' methods built on the stages below: AAX (Nasir et al.), CAM ensembles (Ostrowski
et al.), gaze heatmaps and pseudo-masks (Zhong et al.)."""
