"""The page `tinygpt serve` shows: index.html, style.css and app.js, plain files read with
importlib.resources (a package, so that setuptools ships them as package data)."""
