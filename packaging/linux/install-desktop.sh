#!/usr/bin/env bash
# Put the launcher, the AppStream metainfo and the icons in the user's data folder
# (${XDG_DATA_HOME:-~/.local/share}), so that the app appears in the menu and in the file
# manager's "Open with" for images.
#
#   packaging/linux/install-desktop.sh [PATH/TO/vit-desktop-gui]      # or: make install-desktop
#   packaging/linux/install-desktop.sh --uninstall
#
# Without an argument the launcher runs `vit-desktop-gui` from PATH; give the program's
# full path when it is not on PATH (a virtual environment, the frozen dist/vit-desktop/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
id=io.github.vitdesktop.ViTDesktop
data="${XDG_DATA_HOME:-$HOME/.local/share}"
sizes="16 32 48 64 128 256 512"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$data/applications/$id.desktop" "$data/metainfo/$id.metainfo.xml" \
          "$data/icons/hicolor/scalable/apps/$id.svg"
    for s in $sizes; do rm -f "$data/icons/hicolor/${s}x${s}/apps/$id.png"; done
    command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
    echo "removed $id from $data"
    exit 0
fi

exe="${1:-}"
if [ -n "$exe" ]; then
    [ -x "$exe" ] || { echo "install-desktop: $exe is not an executable file" >&2; exit 2; }
    exe="$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")"
    # The .desktop format reserves these (space, quotes, \ $ ` & | ; ( ) # < > * ? ~) outside
    # quotes, and sed's replacement below reserves & | \; % is a field code.
    case "$exe" in *[[:space:]\"\'\\\$\`\&\|%\;\(\)\#\<\>\*\?\~]*)
        echo "install-desktop: the program's path must not contain spaces, quotes or any of" \
             "\\ \$ \` & | % ; ( ) # < > * ? ~: $exe" >&2; exit 2;;
    esac
fi

mkdir -p "$data/applications" "$data/metainfo" "$data/icons/hicolor/scalable/apps"
if [ -n "$exe" ]; then
    sed -e "s|^Exec=vit-desktop-gui |Exec=$exe |" -e "s|^TryExec=vit-desktop-gui\$|TryExec=$exe|" \
        "$here/$id.desktop" > "$data/applications/$id.desktop"
else
    cp "$here/$id.desktop" "$data/applications/$id.desktop"
fi
cp "$here/$id.metainfo.xml" "$data/metainfo/$id.metainfo.xml"
cp "$root/resources/icons/vit-desktop.svg" "$data/icons/hicolor/scalable/apps/$id.svg"
for s in $sizes; do
    mkdir -p "$data/icons/hicolor/${s}x${s}/apps"
    cp "$root/resources/icons/vit-desktop-$s.png" "$data/icons/hicolor/${s}x${s}/apps/$id.png"
done

# Refresh the menu's and the icon theme's caches where those tools exist.
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
if [ -f "$data/icons/hicolor/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null; then
    gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
fi
echo "installed $id in $data (launcher runs: $(sed -n 's/^Exec=//p' "$data/applications/$id.desktop"))"
