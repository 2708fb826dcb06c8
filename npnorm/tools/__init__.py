"""Project tools that are not part of the library: building the book, opening it in JupyterLab."""
