from eir_compiled.finder import install

install()  # the compiled build of the hot modules, where one matches the sources
