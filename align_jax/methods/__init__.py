"""The programme's methods, each in its own folder with only what is its own."""
