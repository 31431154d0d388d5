"""One loader per VQA benchmark, each reading the official files from local paths."""
