"""MONAI Deploy application restoring MRI, CT and PET with the AMIR bundle (see deploy/README.md)."""
