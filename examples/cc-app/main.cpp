// A dynamically linked C++ program: it needs the loader, libc, libstdc++,
// libgcc_s and libm at run time, which the image gets as Debian packages.
#include <iostream>
#include <string>
#include <vector>

int main() {
    std::vector<std::string> words{"hello", "from", "a", "dynamically", "linked",
                                   "C++", "program", "on", "static_base()"};
    std::string line;
    for (const auto &w : words) {
        line += (line.empty() ? "" : " ") + w;
    }
    std::cout << line << std::endl;
    return 0;
}
