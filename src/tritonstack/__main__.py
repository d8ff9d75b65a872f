from tritonstack.cli import console_main

console_main()
