"""Mirror sync: keep target registries and OCI layouts in step with upstream repositories.

* :mod:`regtool.sync.config`: the configuration model (regtool's YAML format, validated against the
  shipped JSON Schema, and skopeo's sync YAML / command line turned into the same model);
* :mod:`regtool.sync.filters`: tag selection (anchored regexes, Masterminds/semver ranges, latest N);
* :mod:`regtool.sync.shard`: ``--shard I/N`` assignment of repositories to workers.

Nothing is imported here, so ``import regtool.sync.report`` stays cheap for the CLI.
"""
