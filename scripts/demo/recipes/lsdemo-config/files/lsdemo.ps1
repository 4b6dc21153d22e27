# lockship demo activation hook (sourced by activation scripts)
$Env:LSDEMO_ACTIVATED = "yes"
