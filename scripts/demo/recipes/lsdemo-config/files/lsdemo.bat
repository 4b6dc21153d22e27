@REM lockship demo activation hook (called by activation scripts)
@SET "LSDEMO_ACTIVATED=yes"
