FROM --platform=linux/nonsense-arch/x/y debian
