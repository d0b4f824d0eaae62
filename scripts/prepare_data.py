"""Snakemake script: read MNIST from the configured source, check it, write the prepared arrays."""

from gradatlas import data
from gradatlas.files import logged

with logged(snakemake.log[0]):
    settings = snakemake.config["data"]
    source, path, url = settings["source"], settings["path"], settings.get("url")
    mnist = data.load(source, path, url=url, allow_unusual_split=settings.get("allow_unusual_split", False))
    data.prepare(mnist, snakemake.output.prepared, data.describe_source(source, path, url=url))
    print(f"prepared MNIST from {source} {path}: {len(mnist.x_train)} train / {len(mnist.x_test)} test images")
