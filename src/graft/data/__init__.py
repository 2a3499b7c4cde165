"""Finding, checking and loading the user's images: folders, splits, CSVs, transforms."""
