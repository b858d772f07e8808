"""Gates: a typed release policy (gates.yaml) applied to an evaluation, giving a decision with a
pass/fail, the measured value, the threshold and a reason for every rule."""
