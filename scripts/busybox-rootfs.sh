#!/usr/bin/env bash
# Make a root file system tarball from the host's static busybox (Debian: busybox-static):
#   /bin/busybox, every applet of `busybox --list` as a symlink to it in /bin,
#   /etc/passwd and /etc/group (root, nobody), /tmp (1777), /root, /www,
# all owned by root, with a "./" root entry of mode 0755. `make run` turns it into
# localhost/busybox:latest with `podplay import`.
#
# Usage: scripts/busybox-rootfs.sh OUT.tar     (BUSYBOX=/path/to/busybox to use another binary)
set -euo pipefail

out=${1:?usage: $0 OUT.tar}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "$0: $busybox not found (install busybox-static)" >&2
    exit 1
fi
# A dynamically linked busybox would need the host's libraries inside the image.
if file_out=$(LC_ALL=C file -bL "$busybox" 2>/dev/null) && [[ $file_out == *"dynamically linked"* ]]; then
    echo "$0: $busybox is dynamically linked; the image needs a static one (busybox-static)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/busybox-rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
mkdir -m 0755 "$root"

mkdir -m 0755 "$root/bin" "$root/etc" "$root/root" "$root/www"
mkdir -m 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    ln -s busybox "$root/bin/$applet"
done

printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Same input, same tarball: sorted names, one fixed time, numeric root ownership.
mtime=$(stat -c %Y "$busybox")
tar --create --file "$out.tmp" --directory "$root" --sort=name --mtime="@$mtime" \
    --owner=0 --group=0 --numeric-owner --format=gnu .
mv "$out.tmp" "$out"
