//! `plinth image build`: kernel + initramfs, bootable disk/ISO and Vagrant box from a manifest.
