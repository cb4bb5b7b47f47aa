"""hdc_lib."""
