"""Packaging for tiny_gpt: every field comes from settings.ini (the nbdev 2 layout)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).parent
config = ConfigParser(delimiters=["="])
config.read(here / "settings.ini", encoding="utf-8")
cfg = config["DEFAULT"]

for key in "version description keywords author author_email license min_python lib_name user git_url".split():
    assert key in cfg, f"settings.ini is missing `{key}`"

licenses = {"apache2": "Apache-2.0", "mit": "MIT"}  # settings.ini name -> SPDX expression
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable",
            "6 - Mature", "7 - Inactive"]
py_versions = "3.10 3.11 3.12 3.13".split()

license_name = licenses[cfg["license"].lower()]
min_python = cfg["min_python"]
requirements = cfg.get("requirements", "").split()
dev_requirements = cfg.get("dev_requirements", "").split()
console_scripts = cfg.get("console_scripts", "").split()
package_data = {}
for entry in cfg.get("package_data", "").split():  # "pkg:glob" pairs
    pkg, pattern = entry.split(":")
    package_data.setdefault(pkg, []).append(pattern)
readme = here / "README.md"

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else "",
    long_description_content_type="text/markdown",
    keywords=cfg["keywords"],
    author=cfg["author"],
    author_email=cfg["author_email"],
    license=license_name,
    url=cfg["git_url"],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"].title(),
        "Natural Language :: " + cfg["language"].title(),
    ] + ["Programming Language :: Python :: " + v for v in py_versions[py_versions.index(min_python):]],
    packages=setuptools.find_packages(include=[cfg["lib_name"], cfg["lib_name"] + ".*"]),
    package_data=package_data,
    include_package_data=True,
    install_requires=requirements,
    extras_require={"dev": dev_requirements,
                    "safetensors": ["safetensors>=0.4"],  # reading .safetensors weights
                    "hub": ["huggingface_hub>=0.23", "safetensors>=0.4"],  # GPT-2 weights by name
                    "pandas": ["pandas>=2"]},  # the book's DataFrame functions (classification)
    python_requires=">=" + min_python,
    entry_points={
        "console_scripts": console_scripts,
        "nbdev": [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"],
    },
    zip_safe=False,
)
