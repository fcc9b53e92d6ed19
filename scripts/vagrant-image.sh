#!/usr/bin/env bash
# Builds what the Vagrantfile boots: the node image (vmlinuz + initramfs.img) in
# ${PLINTH_IMAGE:-image-out}, and master-initrd.img = a master image's initramfs (the same
# build with etcd in it, for MASTERS=3) plus a second cpio archive holding the boot files
# under /srv/plinth-boot, which the master VMs serve to the agents that PXE-boot from them
# (the kernel unpacks concatenated archives in order).
# PLINTH_SKIP_BUILD=1 only adds master-initrd.img to an existing image directory.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${PLINTH_IMAGE:-image-out}"
plinth="${PLINTH_BIN:-target/release/plinth}"
if [ "${PLINTH_SKIP_BUILD:-}" != 1 ]; then
    if [ ! -x "$plinth" ]; then
        cargo build --release -p plinth --bins
    fi
    "$plinth" image build --out "$out"
    "$plinth" image build --out "$out/master" --with-etcd
fi
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/srv/plinth-boot"
cp "$out/vmlinuz" "$out/initramfs.img" "$staging/srv/plinth-boot/"
(cd "$staging" && find srv | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible) > "$staging/boot-files.cpio"
# The kernel looks for the next archive only at a 4-byte boundary: pad with zeros (skipped).
master_initrd="$out/master/initramfs.img"
[ -f "$master_initrd" ] || master_initrd="$out/initramfs.img"  # PLINTH_SKIP_BUILD on an older image: no etcd
size=$(stat -c %s "$master_initrd")
{ cat "$master_initrd"; head -c $(( (512 - size % 512) % 512 )) /dev/zero; cat "$staging/boot-files.cpio"; } > "$out/master-initrd.img"
echo "vagrant-image.sh: $out/vmlinuz, $out/initramfs.img, $out/master-initrd.img ready; now: vagrant up"
