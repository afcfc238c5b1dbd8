# Shared by the scripts: where the environment lives. Sourced, not run.
SMARTY_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMARTY_CACHE="${SMARTY_P1_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smarty_p1}"
SMARTY_ROOT="$SMARTY_CACHE/sid-root"
# auto: python3.14 from PATH when present, else the chroot; SMARTY_P1_MODE=host|chroot forces one.
SMARTY_MODE="${SMARTY_P1_MODE:-auto}"
if [ "$(cat "$SMARTY_CACHE/mode" 2>/dev/null)" = host ]; then
  SMARTY_VENV_HOST="$SMARTY_CACHE/venv"
  SMARTY_VENV="$SMARTY_VENV_HOST"
else
  SMARTY_VENV_HOST="$SMARTY_ROOT/opt/venv"
  SMARTY_VENV=/opt/venv
fi
SMARTY_VENV_OLDEST="$SMARTY_VENV-oldest"
