"""The Shapes world: a procedural dataset the project makes itself."""
