try:
    from eir_compiled.finder import install
except ModuleNotFoundError:  # an editable install made before eir_compiled existed
    import warnings

    warnings.warn(
        "eir_compiled not installed (pip install -e .): pure Python", RuntimeWarning, stacklevel=2
    )
else:
    install()  # the compiled build of the hot modules, where one matches the sources
