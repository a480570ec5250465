"""From a trained classifier to maps: CAMs, Monte Carlo dropout, ``predict_explain``, CCAM."""
