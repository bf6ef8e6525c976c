from glob import glob

from setuptools import setup

PACKAGE = "edgeinfer_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="edgeinfer maintainers",
    maintainer_email="edgeinfer@example.com",
    description="edgeinfer as a ROS 2 node",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"edgeinfer_node = {PACKAGE}.node:main"]},
)
