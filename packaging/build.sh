#!/usr/bin/env bash
# Build the frozen app for this platform and run its self-test.
#
#   packaging/build.sh            # or: make package
#
# Output: dist/vit-desktop/ (vit-desktop-gui, vit-desktop and their libraries);
# on macOS also "dist/ViT Desktop.app".  PYTHON picks the interpreter (default: .venv's);
# it needs the app installed (`make install`) and PyInstaller (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=.venv/Scripts/python.exe; fi
fi
"$PYTHON" -c "import PyInstaller" 2>/dev/null || "$PYTHON" -m pip install "pyinstaller>=6.10"

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level "${PYI_LOG_LEVEL:-WARN}" \
    --distpath dist --workpath build/pyinstaller packaging/vit-desktop.spec
echo "built in $(( $(date +%s) - start )) s"

app=dist/vit-desktop
exe="$app/vit-desktop"
[ -x "$exe" ] || exe="$app/vit-desktop.exe"
if [ -d "dist/ViT Desktop.app" ]; then
    exe="dist/ViT Desktop.app/Contents/MacOS/vit-desktop"
fi
echo "size: $(du -sh "$app" | cut -f1) in $(find "$app" -type f | wc -l | tr -d ' ') files ($app)"
echo "self-test: $exe --self-test"
"$exe" --self-test
