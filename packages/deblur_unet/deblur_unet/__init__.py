"""GoPro motion deblurring with a U-Net (see README.md)."""
