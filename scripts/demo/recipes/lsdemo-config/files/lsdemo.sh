# lockship demo activation hook (sourced by activation scripts)
export LSDEMO_ACTIVATED=yes
