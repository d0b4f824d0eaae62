"""Snakemake script: read MNIST from the configured source, check it, write the prepared arrays."""
from gradatlas import data
from gradatlas.files import logged

with logged(snakemake.log[0]):
    source, path, url = snakemake.params.source, snakemake.params.path, snakemake.params.url
    mnist = data.load(source, path, url=url)
    data.prepare(mnist, snakemake.output.prepared, data.describe_source(source, path, url=url))
    print(f"prepared MNIST from {source} {path}: {len(mnist.x_train)} train / {len(mnist.x_test)} test images")
