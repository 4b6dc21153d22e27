# lockship demo activation hook (sourced by activation scripts)
set -gx LSDEMO_ACTIVATED yes
