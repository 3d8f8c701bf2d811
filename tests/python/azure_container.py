"""Creates a blob container on an Azure Storage endpoint (Azurite) with
pyarrow's Azure filesystem (Azure's own C++ SDK), for tests/src/azurite.rs.

    azure_container.py <host:port> <container>   (account and key from
    AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY)
"""

import os
import sys

import pyarrow.fs as pafs


def main():
    authority, container = sys.argv[1], sys.argv[2]
    fs = pafs.AzureFileSystem(
        account_name=os.environ["AZURE_STORAGE_ACCOUNT_NAME"],
        account_key=os.environ["AZURE_STORAGE_ACCOUNT_KEY"],
        blob_storage_authority=authority,
        blob_storage_scheme="http",
        dfs_storage_authority=authority,
        dfs_storage_scheme="http",
    )
    fs.create_dir(container)


if __name__ == "__main__":
    main()
