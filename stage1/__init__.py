"""Stage 1 of CDSP (make_pseudo_labels.py): the CAM classifier (classifier.py) and the pseudo-labels it gives (labeller.py)."""
