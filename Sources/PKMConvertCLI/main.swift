print("pkm-convert")
